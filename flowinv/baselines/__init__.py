"""Baselines of the experiments (Asim et al. 2020, §3 and supplement; Whang et al.'s "Bora").

* :mod:`~flowinv.baselines.classical`: BM3D denoising (``bm3d`` package); Lasso compressed
  sensing in the DCT or wavelet basis by FISTA (:func:`~flowinv.baselines.classical.lasso_cs`,
  also the Lasso-wavelet initialisation of the Glow latent).
* :mod:`~flowinv.baselines.deep_decoder`: the (overparametrised) Deep Decoder of Heckel & Hand
  (2019), an untrained network fitted to the measurements.
* :mod:`~flowinv.baselines.dcgan`: a DCGAN (Radford et al. 2016), the GAN prior of CSGM (Bora
  et al. 2017) and of the MLE loss of Whang et al.; training loop and one-latent generator.
* :mod:`~flowinv.baselines.iagan`: image-adaptive GAN reconstruction (Hussein et al. 2020): the
  DCGAN's weights and latent fitted to each image from the CSGM solution, then back-projected.
* :mod:`~flowinv.baselines.imle`: fits the same generator without a discriminator, by implicit
  maximum-likelihood estimation (Li & Malik 2018), where adversarial training collapses.
"""

from flowinv.baselines import classical, dcgan, deep_decoder, iagan, imle
from flowinv.baselines.classical import bm3d_denoise, lasso_cs
from flowinv.baselines.dcgan import DCGANConfig, generator_apply, train_dcgan
from flowinv.baselines.deep_decoder import deep_decoder_recover
from flowinv.baselines.iagan import iagan_recover
from flowinv.baselines.imle import train_imle

__all__ = ["DCGANConfig", "bm3d_denoise", "classical", "dcgan", "deep_decoder",
           "deep_decoder_recover", "generator_apply", "iagan", "iagan_recover", "imle", "lasso_cs",
           "train_dcgan", "train_imle"]
