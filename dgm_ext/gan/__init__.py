"""GANs on the fused ops: losses and penalties, generator EMA, MLP and DCGAN networks."""

from dgm_ext.gan.ema import GeneratorEMA
from dgm_ext.gan.gan import GAN, GANConfig, load_gan, save_gan
from dgm_ext.gan.losses import (
    CRITIC_LOSSES,
    GENERATOR_LOSSES,
    critic_loss,
    generator_loss,
    gradient_penalty,
    hinge_critic_loss,
    hinge_generator_loss,
    jsd_critic_loss,
    jsd_estimate,
    jsd_generator_loss_nonsaturating,
    jsd_generator_loss_saturating,
    r1_penalty,
    w1_critic_loss,
    w1_estimate,
    w1_generator_loss,
)
from dgm_ext.gan.models import DCGANCritic, DCGANGenerator, MLPDiscriminator, MLPGenerator

__all__ = [
    "CRITIC_LOSSES",
    "GAN",
    "GENERATOR_LOSSES",
    "DCGANCritic",
    "DCGANGenerator",
    "GANConfig",
    "GeneratorEMA",
    "MLPDiscriminator",
    "MLPGenerator",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "hinge_critic_loss",
    "hinge_generator_loss",
    "jsd_critic_loss",
    "jsd_estimate",
    "jsd_generator_loss_nonsaturating",
    "jsd_generator_loss_saturating",
    "load_gan",
    "r1_penalty",
    "save_gan",
    "w1_critic_loss",
    "w1_estimate",
    "w1_generator_loss",
]
