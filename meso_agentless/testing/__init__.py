"""Test helpers that ship with the package, for this project's tests and for users' own."""
