"""Text-based recommendation: recommend items to users from what they did and from what the items say."""
