"""`python -m keras_cskd` runs the `keras-cskd` command line."""

from keras_cskd.cli import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
