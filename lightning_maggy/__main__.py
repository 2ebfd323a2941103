"""``python -m lightning_maggy``: the ``lightning-maggy`` command line (:mod:`lightning_maggy.cli`)."""

from lightning_maggy.cli import main

if __name__ == "__main__":  # not when a worker process imports the main module
    raise SystemExit(main())
