"""The primitives' definitions: elementwise rows in `elementwise`, a module per structural family
(its definition, shape rule and kernel bodies for every layout), collected by `core.registry`.

Adding a structural primitive is one module here (see docs/design.md, "Adding a primitive")."""
