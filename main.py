"""Vireo's entry point: `python main.py --help`."""

from app.cli import main

if __name__ == "__main__":
    main()
