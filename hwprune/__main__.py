from hwprune.cli import main

raise SystemExit(main())
