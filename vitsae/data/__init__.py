"""Image sources, preprocessing, and the procedural shapes dataset."""
