from bulktag.cli import main

raise SystemExit(main())
