"""Building blocks shared by the UNet, the temporal VAE and the image encoder."""
