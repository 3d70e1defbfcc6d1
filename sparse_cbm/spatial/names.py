"""The heatmap methods SALF-CBM's evaluation scores, named once: their keys in ``metrics/spatial.json`` and
the words the report and the generated docs put on them, in the order every table lists them. No torch
here: ``sparse-cbm docs`` reads it."""

HEATMAP_LABELS = {"salf_cbm": "SALF-CBM concept maps (class heatmap)",
                  "class_concept_maps": "SALF-CBM with class concepts: the class's own map (the paper's Table 2; "
                                        "needs class names the CLIP can read)",
                  "gradcam_salf_cbm": "Grad-CAM of the SALF-CBM",
                  "gradcam_probe": "Grad-CAM of the black box (linear probe)",
                  "gradcampp_probe": "Grad-CAM++ of the black box", "layercam_probe": "LayerCAM of the black box",
                  "raw_p": "raw P (ringed CLIP), upsampled"}
HEATMAP_METHODS = tuple(HEATMAP_LABELS)
