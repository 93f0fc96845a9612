"""NYC flights 2013: will a flight arrive more than 15 minutes late?"""
