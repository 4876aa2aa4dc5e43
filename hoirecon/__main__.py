from hoirecon.cli import entry

entry()
