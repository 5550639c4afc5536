"""broken: recurses without end at import, with a low recursion limit."""

import sys

sys.setrecursionlimit(60)


def f():
    return f()


f()
