"""Command-line interface: parsing and wiring only; the work happens in the layers below."""
