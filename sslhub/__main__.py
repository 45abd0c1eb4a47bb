import sys

from sslhub.cli import main

sys.exit(main())
