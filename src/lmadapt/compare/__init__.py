"""Many runs on the same data, one table: the few-shot sweep (and, later, the strategy leaderboard)."""
