"""``python -m hub_client``: the ``hub`` command (see :mod:`hub_client.cli`)."""

from hub_client.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
