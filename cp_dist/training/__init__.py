"""Training: stages (a registry), the one loop over the engines, local and Ray runners, the comparison."""
