"""The SVD networks (VideoUNet, temporal VAE, OpenCLIP image encoder), the conditioner and ExVideo."""
