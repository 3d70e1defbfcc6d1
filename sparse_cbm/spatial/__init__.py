"""SALF-CBM (Benou & Riklin Raviv, "Show and Tell: Visually Explainable Deep Neural Nets via
Spatially-Aware Concept Bottleneck Models"): concept maps, heatmaps, Explain Anything and local
editing, as the second branch of the pipeline."""
