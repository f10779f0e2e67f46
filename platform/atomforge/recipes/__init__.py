"""Run recipes: functions returning whole typed configs (torchtitan style); pick one by name on the CLI."""
