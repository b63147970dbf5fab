"""bio: differentiable molecular-mechanics energies for proteins and protein-ligand work (OpenMM units)."""
