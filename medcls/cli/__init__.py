"""The command line: ``python -m medcls {train,evaluate,predict,runs,rename,delete,resume,report,lesson,export,
import,demo-data,bench}``.

Every TrainConfig option is a ``train`` flag, generated from the config's own fields and help text, so the CLI,
the app form and the saved JSON never drift. main.py holds the parser and the training and run commands;
teach.py the lesson, export and import commands; commands.py the registry they share.
"""

from .commands import COMMANDS
from .main import build_parser, main

__all__ = ["main", "build_parser", "COMMANDS"]
