"""LiRA on MICO: faithful split reconstruction, models, data, attack math and scoring."""
