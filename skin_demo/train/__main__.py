import sys

from skin_demo.train.cli import main

sys.exit(main())
