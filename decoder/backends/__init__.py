"""Model backends behind one small interface, imported only when chosen."""
