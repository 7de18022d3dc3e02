"""``python -m l1_operational``: run L1 as its own process (see :mod:`l1_operational.cli_entry`)."""

from l1_operational.cli_entry import main

raise SystemExit(main())
