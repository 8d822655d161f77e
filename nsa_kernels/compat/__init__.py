"""Drop-in replacements for peers' entry points (same names, signatures and output contract)."""
