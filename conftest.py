# Root conftest: keeps pytest's doctest collection away from entry points that run on import.
collect_ignore_glob = ["src/cegeo/__main__.py"]
