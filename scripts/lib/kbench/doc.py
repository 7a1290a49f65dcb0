"""docs/benchmarks.md is hand-written prose around generated sections; each
run replaces only its own section, between marker comments, so a host run
keeps the real-KVM figures and the analysis written around them."""

import os

from .vmm import REPO

PATH = os.path.join(REPO, "docs", "benchmarks.md")


def markers(name):
    return (f"<!-- scripts/bench {name}: generated, do not edit by hand; begin -->",
            f"<!-- scripts/bench {name}: end -->")


def update(name, text):
    """Replace section `name` with `text`, or append it if it is new."""
    begin, end = markers(name)
    doc = open(PATH).read() if os.path.exists(PATH) else "# Benchmarks\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        _, tail = rest.split(end, 1)
        doc = head + block + tail
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    with open(PATH, "w") as f:
        f.write(doc)
