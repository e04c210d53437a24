from loadgen.cli.entry import main

raise SystemExit(main())
