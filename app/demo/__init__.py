"""The demo (`vireo --demo`): generated patients, CT/MR phantoms, SEGs, datasets, tags and workflows."""
