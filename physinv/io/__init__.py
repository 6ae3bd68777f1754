"""Reading and writing the data contracts: transforms.json, images, HDR maps, meshes, reports, run results."""
