"""`python -m app.ohif install …`: the same as `vireo ohif install …`, without Vireo's web stack."""

from app.ohif.cli import main

raise SystemExit(main())
