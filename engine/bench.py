"""engine bench (placeholder wiring; filled in by the bench module below)."""


def add_arguments(p):
    p.add_argument("job", nargs="?", default=None)


def run_bench(args):
    raise NotImplementedError
