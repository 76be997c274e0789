"""Entrypoint of the operator process."""


def main() -> None:
    raise SystemExit("the operator is not implemented yet")


if __name__ == "__main__":
    main()
