from chargepoint.cli import main

raise SystemExit(main())
