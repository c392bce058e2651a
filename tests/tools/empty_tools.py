"""A module without tools."""


def helper() -> None:
    pass
