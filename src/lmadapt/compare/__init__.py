"""Many runs on the same data, one table: the strategy leaderboard (`lmadapt compare`) and the few-shot sweep."""
