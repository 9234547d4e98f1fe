"""The measurements made on trained models: likelihood bounds and gaps, the discriminator,
the spectrum, observations, classifiers and monitors."""
