"""The paper's PLM-based baselines (its Table 2), each a model here and a stage in the registry."""
