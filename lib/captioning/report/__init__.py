"""What the pipeline reports: caption metrics and the HTML gallery."""
