"""Financial opinion monitoring (`lmadapt monitor`): items labelled by adapted runs, stored with per-window
aggregates, surges of negative news per topic detected and alerted, on a dashboard."""
