"""dft: a differentiable Kohn-Sham DFT solver for molecules (atomic units)."""
