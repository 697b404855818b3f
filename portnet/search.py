"""The book's random hyperparameter search (ch. 6.5) as tasks on a Dask cluster (issue 22: being written)."""


def add_arguments(parser) -> None:
    """The options of ``portnet search``."""


def main(args) -> int:
    raise NotImplementedError("portnet search is being written")
