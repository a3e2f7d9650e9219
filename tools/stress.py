"""Stress tests of the collection (placeholder)."""

from __future__ import annotations


def main() -> None:
    """Run the stress tests."""
    print("stress not yet available")


if __name__ == "__main__":
    main()
