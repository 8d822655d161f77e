"""Experiments that measured no gain, kept runnable so that their story can be retold.

Nothing in the package's hot paths imports from here.
"""
