// The image builder library; its code lands with the image builder issue.
