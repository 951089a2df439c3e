"""flowinv: imaging inverse problems with normalizing-flow priors, in JAX.

The curated public API; submodules hold the rest:

* flows: :func:`glow`, :func:`realnvp`, and :func:`chain` of layers of your choice (pure-function
  flows with explicit log-dets);
* recovery: :func:`recover` (a batch, on the host), :func:`recover_one` (one image, a pure
  function to compose with jit/vmap), :class:`Recovery`, :class:`Generator`, :func:`invert_images`;
* priors: :func:`load_prior`;
* submodules ``operators``, ``noise``, ``losses``, ``solvers``, ``theory``, ``data``,
  ``metrics``, ``plotting``, ``train``, ``checkpoints``, ``baselines``.
"""

from flowinv.checkpoints import load_prior
from flowinv.flows import Chain, Flow, Glow, RealNVP, chain, glow, num_params, realnvp
from flowinv.recover import Generator, Recovery, invert_images, recover, recover_one

__version__ = "0.1.0"

__all__ = ["Chain", "Flow", "Generator", "Glow", "RealNVP", "Recovery", "chain", "glow",
           "invert_images", "load_prior", "num_params", "realnvp", "recover", "recover_one"]
