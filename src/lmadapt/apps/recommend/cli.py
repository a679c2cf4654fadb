"""`lmadapt recommend`: train, measure, query and serve a recommender (each command a thin call into the recommend
package's Python API).

`lmadapt recommend USER_ID --from FOLDER` is short for `lmadapt recommend show USER_ID --from FOLDER`, and so is a
first argument that is an option (`lmadapt recommend --similar-to ITEM --from FOLDER`): whatever is not a command's
name goes to `show`."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from rich.console import Console
from rich.table import Table as RichTable
from typer.core import TyperGroup

from lmadapt.errors import nearest
from lmadapt.serving.settings import API_KEY_ENV, MAX_PORT, MIN_PORT, ServiceSettings, setting_help

SHOW = "show"


class ShowByDefault(TyperGroup):
    """A group whose arguments go to `show` unless the first names a command (or asks for help)."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            command = nearest(args[0], list(self.commands))
            if command is not None and "--from" not in args:  # a misspelt command, not a user id
                raise click.UsageError(
                    f"no command '{args[0]}': did you mean '{command}'? (a user id goes with --from FOLDER)", ctx
                )
            args = [SHOW, *args]
        return super().parse_args(ctx, args)


recommend_app = typer.Typer(
    cls=ShowByDefault,
    help="Recommendations from what users did and what items say: collaborative baselines (popularity, ItemKNN, "
    "EASE, BPR, ALS), a text model on an adapted encoder that can recommend items nobody has rated yet, and a "
    "hybrid that re-ranks the text and collaborative candidates with a learned blend.\n\n"
    "Examples:\n\n"
    "lmadapt recommend train configs/recommend/ml100k_ease.yaml\n\n"
    "lmadapt recommend 196 --from recommenders/ml100k-ease (short for: lmadapt recommend show 196 --from ...)\n\n"
    "lmadapt recommend --similar-to 50 --from recommenders/ml100k-text",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)
SET_HELP = "Override a key: --set ease.l2=250 (repeatable); `lmadapt recommend keys` lists them."


@recommend_app.command()
def train(
    config: Path = typer.Argument(..., help="Recommender recipe (YAML), e.g. configs/recommend/ml100k_ease.yaml."),
    output: Path | None = typer.Option(None, help="The recommender folder to write; default: <output_dir>/<name>."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing recommender folder."),
) -> None:
    """Measure the recipe on its split (unless evaluation.at_train=false), fit the model on all the interactions and
    write a recommender folder (atomic, with a manifest).

    Example: lmadapt recommend train configs/recommend/ml100k_ease.yaml
    """
    from lmadapt.apps.recommend.config import load_recommend_config
    from lmadapt.apps.recommend.recommender import open_recommender, train_recommender

    folder = train_recommender(load_recommend_config(config, set_), output, overwrite=overwrite, progress=errors.print)
    saved = open_recommender(folder)
    if saved.metrics is not None:
        print_metrics(saved.metrics)
    console.print(f"recommender folder: {folder}", soft_wrap=True)  # a path to copy, never folded


@recommend_app.command()
def evaluate(
    targets: list[Path] = typer.Argument(
        ...,
        metavar="TARGET...",
        help="Recipes (YAML): each fitted on its split and measured; or one recommender folder: the metrics it was "
        "trained with.",
    ),
    seed: list[int] = typer.Option(
        [], "--seed", help="Split seed (repeatable): each recipe is measured on each seed's split; default its own."
    ),
    report: Path | None = typer.Option(
        None,
        "--report",
        help="Write report.json, report.md and report.png into this folder: per recipe the mean of each metric over "
        "the seeds with a 95% interval (t over seeds; with one seed a bootstrap over users).",
    ),
    output: Path | None = typer.Option(None, help="Write the reports (metrics, split, timings) as JSON to this file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP + " Recipes only; applies to each."),
) -> None:
    """Full-ranking metrics on the recipe's split: NDCG, Recall, Precision, MAP, HR and coverage at each k, and MRR;
    several recipes and seeds side by side, with intervals.

    Example: lmadapt recommend evaluate configs/recommend/ml100k_ease.yaml --set evaluation.split=temporal_loo

    Example: lmadapt recommend evaluate configs/recommend/ml100k_ease.yaml configs/recommend/ml100k_popularity.yaml
    --seed 42 --seed 43 --seed 44 --report reports/ml100k
    """
    from lmadapt.apps.recommend import report as reporting
    from lmadapt.apps.recommend.config import load_recommend_config
    from lmadapt.apps.recommend.recommender import compare_recipes, open_recommender, write_report
    from lmadapt.errors import LmadaptError
    from lmadapt.runs import check_output_path

    if output is not None:
        check_output_path(output, folder=False, example="report.json")  # before the work, not after
    if report is not None:
        check_output_path(report, folder=True, example="reports/ml100k", option="--report")
    folders = [target for target in targets if target.is_dir()]
    if folders:
        if len(targets) > 1 or set_ or seed or report is not None:
            raise LmadaptError(
                "a recommender folder shows the metrics it was trained with; --set, --seed, --report and more "
                "targets measure recipes",
                where=str(folders[0]),
                fix=f"evaluate its recipe: lmadapt recommend evaluate {folders[0] / 'config.yaml'}",
            )
        saved = open_recommender(folders[0]).metrics
        if saved is None:
            raise LmadaptError(
                "this recommender was trained without an evaluation (evaluation.at_train=false)",
                where=str(folders[0]),
                fix=f"evaluate its recipe: lmadapt recommend evaluate {folders[0] / 'config.yaml'}",
            )
        found = {saved["model"]: [saved]}
    else:
        configs = [load_recommend_config(target, set_) for target in targets]
        found = compare_recipes(configs, seed, progress=errors.print)
    results = {name: [one["metrics"] for one in reports] for name, reports in found.items()}
    single = sum(len(reports) for reports in found.values()) == 1
    if single:
        print_metrics(next(iter(found.values()))[0])
    if not single or report is not None:
        table, plotted = reporting.shown_metrics(results)
        if not single:
            console.print(reporting.markdown_table(reporting.summarise(results), table), soft_wrap=True)
        if report is not None:
            title = "Recommendation: " + ", ".join(results)
            paths = reporting.write_report(results, report, title, table, plotted)
            console.print(f"report: {paths['markdown']}, {paths['json']}, {paths['png']}", soft_wrap=True)
    if output is not None:
        for reports in found.values():
            for one in reports:
                one["metrics"].pop("per_user", None)
        every = [one for reports in found.values() for one in reports]
        write_report(every[0] if len(every) == 1 else every, output)
        console.print(f"report: {output}", soft_wrap=True)


def print_metrics(report: dict) -> None:
    from lmadapt.apps.recommend.recommender import metrics_rows

    split = report["split"]
    metrics = report["metrics"]
    table = RichTable(
        title=f"{report['model']} on {report['data']}, {split['kind']} split (seed {split['seed']}), "
        f"{metrics['users']} users, {metrics['candidates']} candidate items"
    )
    rows = metrics_rows(report)
    table.add_column("k", justify="right")
    for name in rows[0][1]:
        table.add_column(name.upper() if name in ("ndcg", "map", "hr") else name, justify="right")
    for k, values in rows:
        table.add_row(k, *(f"{value:.4f}" for value in values.values()))
    console.print(table)
    console.print(f"MRR {metrics['mrr']:.4f} (full ranking); fitted in {report['fit_seconds']:.1f} s")


@recommend_app.command(SHOW)
def show(
    user: str | None = typer.Argument(
        None, metavar="USER_ID", help="A user id of the data the recommender learnt from."
    ),
    folder: Path = typer.Option(..., "--from", help="Recommender folder."),
    k: int = typer.Option(10, "--k", min=1, help="How many items."),
    similar_to: str | None = typer.Option(None, "--similar-to", help="An item id: the items nearest to it."),
    text: str | None = typer.Option(None, "--text", help="A description of what someone likes (text model)."),
) -> None:
    """Recommendations for a user, items similar to an item, or items for a description; what a user interacted
    with is left out.

    Examples: lmadapt recommend 196 --from recommenders/ml100k-ease;
    lmadapt recommend --similar-to 50 --from recommenders/ml100k-text;
    lmadapt recommend --text "a heist that goes wrong" --from recommenders/ml100k-text
    """
    from lmadapt.apps.recommend.recommender import open_recommender
    from lmadapt.errors import LmadaptError

    asked = [name for name, value in (("USER_ID", user), ("--similar-to", similar_to), ("--text", text)) if value]
    if len(asked) != 1:
        raise LmadaptError(
            "give one of USER_ID, --similar-to ITEM or --text DESCRIPTION"
            + (f" (got {' and '.join(asked)})" if asked else ""),
            where="lmadapt recommend",
            fix="e.g. lmadapt recommend 196 --from FOLDER",
        )
    saved = open_recommender(folder)
    if user is not None:
        found, title = saved.recommend(user, k), f"for user {user}"
    elif similar_to is not None:
        found, title = saved.similar(similar_to, k), f"similar to {similar_to}"
    else:
        found, title = saved.for_history(text=text, k=k), "for the description"
    table = RichTable(title=f"{saved.name} ({saved.model.name}): top {k} {title}")
    for column in ("#", "item", "score", "text"):
        table.add_column(column, overflow="fold")
    for rank, row in enumerate(found, 1):
        table.add_row(str(rank), row["item"], f"{row['score']:.4f}", row["text"])
    console.print(table)


@recommend_app.command("add-items")
def add_items(
    folder: Path = typer.Argument(..., help="Recommender folder of a text model (updated in place, atomically)."),
    file: Path = typer.Argument(..., help="A CSV/TSV/JSONL/Parquet file of the new items."),
    id_column: str = typer.Option("id", "--id-column", help="Column of the item id."),
    text_column: list[str] = typer.Option(
        ["text"], "--text-column", help="Column(s) of the item's text, the title first (repeatable)."
    ),
    fmt: str = typer.Option(
        "auto", "--format", help="File format: auto (from the extension), csv, tsv, jsonl, parquet."
    ),
) -> None:
    """Add items by their text alone: recommendable at once, without retraining (a text model only).

    Example: lmadapt recommend add-items recommenders/ml100k-text new_films.csv --text-column title --text-column genres
    """
    from lmadapt.apps.recommend.recommender import add_items as add_to_folder
    from lmadapt.apps.recommend.recommender import read_new_items

    ids, texts = read_new_items(file, id_column, text_column, fmt)
    saved = add_to_folder(folder, ids, texts)
    console.print(f"added {len(ids)} items to {folder}: {len(saved.catalog)} items in all", soft_wrap=True)


@recommend_app.command()
def serve(
    folder: Path = typer.Argument(..., help="Recommender folder."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, min=MIN_PORT, max=MAX_PORT, help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, envvar=API_KEY_ENV, help="Require this key (Authorization: Bearer KEY or X-API-Key: KEY)."
    ),
    max_texts: int = typer.Option(ServiceSettings.max_texts, min=1, help="Most items in one request's history."),
    max_chars: int = typer.Option(ServiceSettings.max_chars, min=1, help="Most characters in a description."),
    max_body_bytes: int = typer.Option(ServiceSettings.max_body_bytes, min=1, help=setting_help("max_body_bytes")),
    shutdown_timeout: float = typer.Option(30.0, min=0, help="Seconds in-flight requests get to finish on SIGTERM."),
) -> None:
    """Serve the recommender: GET /v1/recommend?user=..&k=.., POST /v1/recommend (a user, a history of item ids or a
    description), GET /v1/similar?item=.., GET /v1/recommender.

    Example: lmadapt recommend serve recommenders/ml100k-text --port 8000
    """
    from lmadapt.apps.recommend.service import serve_recommender

    settings = ServiceSettings(api_key=api_key, max_texts=max_texts, max_chars=max_chars, max_body_bytes=max_body_bytes)
    serve_recommender(folder, settings, host, port, shutdown_timeout, announce=errors.print)
