"""One module per forward mode of the DSA metadata (decode, target verify, draft extend, extend)."""
