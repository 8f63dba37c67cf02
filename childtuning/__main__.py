from childtuning.demo import main

raise SystemExit(main())
