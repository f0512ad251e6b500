"""Log shipping: rotated log files uploaded to Blob Storage in the background."""
