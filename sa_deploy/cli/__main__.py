from sa_deploy.cli import main

raise SystemExit(main())
